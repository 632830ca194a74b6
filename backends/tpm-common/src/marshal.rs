//! Big-endian TPM marshalling: a bounds-checked reader and append-only writers.
//!
//! Every read checks the remaining length first, so malformed input can only produce a
//! [`TpmWireError`], never a panic or a read past the buffer.

use crate::error::{Result, TpmWireError};

/// A cursor over borrowed TPM wire bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8]> {
        if len > self.rest.len() {
            return Err(TpmWireError::Truncated {
                what,
                needed: len,
                available: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// Reads a UINT16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a UINT32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a TPM2B: a UINT16 size and that many bytes; returns the bytes without the size.
    pub fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let size = self.u16(what)?;
        self.take(usize::from(size), what)
    }

    /// Reads a TPM2B whose content may be at most `max` bytes.
    pub fn tpm2b_max(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        let body = self.tpm2b(what)?;
        if body.len() > max {
            return Err(TpmWireError::TooLarge {
                what,
                size: body.len(),
                max,
            });
        }
        Ok(body)
    }

    /// Fails unless every byte has been read.
    pub fn finish(self, what: &'static str) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(TpmWireError::TrailingBytes {
                what,
                count: self.rest.len(),
            })
        }
    }
}

/// Appends a UINT16.
pub fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a UINT32.
pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a TPM2B (size + bytes); fails when `body` does not fit a UINT16 size.
pub fn put_tpm2b(out: &mut Vec<u8>, body: &[u8], what: &'static str) -> Result<()> {
    let size = u16::try_from(body.len()).map_err(|_| TpmWireError::TooLarge {
        what,
        size: body.len(),
        max: usize::from(u16::MAX),
    })?;
    put_u16(out, size);
    out.extend_from_slice(body);
    Ok(())
}

/// Returns `body` as a TPM2B (size prefix + bytes).
pub fn tpm2b(body: &[u8], what: &'static str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 2);
    put_tpm2b(&mut out, body, what)?;
    Ok(out)
}

/// Splits one whole TPM2B buffer (size prefix must cover exactly the rest) into its content.
pub fn unwrap_tpm2b<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8]> {
    let mut reader = Reader::new(bytes);
    let body = reader.tpm2b(what)?;
    reader.finish(what)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_over_read() {
        let mut r = Reader::new(&[0x00, 0x05, 1, 2]);
        let err = r.tpm2b("x").unwrap_err();
        assert_eq!(
            err,
            TpmWireError::Truncated {
                what: "x",
                needed: 5,
                available: 2
            }
        );
    }

    #[test]
    fn tpm2b_round_trip_and_trailing_bytes() {
        let wrapped = tpm2b(&[9, 8, 7], "t").unwrap();
        assert_eq!(wrapped, vec![0, 3, 9, 8, 7]);
        assert_eq!(unwrap_tpm2b(&wrapped, "t").unwrap(), &[9, 8, 7]);
        let mut longer = wrapped.clone();
        longer.push(0);
        assert!(matches!(
            unwrap_tpm2b(&longer, "t"),
            Err(TpmWireError::TrailingBytes { count: 1, .. })
        ));
    }

    #[test]
    fn tpm2b_max_enforced() {
        let mut r = Reader::new(&[0, 3, 1, 2, 3]);
        assert!(matches!(
            r.tpm2b_max("m", 2),
            Err(TpmWireError::TooLarge {
                size: 3,
                max: 2,
                ..
            })
        ));
    }

    #[test]
    fn put_tpm2b_refuses_oversize() {
        let big = vec![0u8; 70_000];
        assert!(matches!(
            tpm2b(&big, "big"),
            Err(TpmWireError::TooLarge { .. })
        ));
    }
}
