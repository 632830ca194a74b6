//! The `api-version` values of the device and service APIs.

/// A device API version (the `api-version` query parameter of register and operation calls).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiVersion {
    /// `2019-03-31`, spoken by older services and SDKs (and the MQTT username).
    V2019_03_31,
    /// `2021-06-01`, what the Azure IoT C SDK sends.
    #[default]
    V2021_06_01,
    /// `2021-10-01`, the current REST reference.
    V2021_10_01,
    /// `2025-07-01-preview`, the version a register call carrying a `csr` (certificate
    /// issuance) is sent with, as public client code does; the service documentation does
    /// not name the version.
    V2025_07_01Preview,
}

/// A value that is not a known device API version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown DPS api-version `{0}`; use one of {list}", list = DEVICE_API_VERSIONS.join(", "))]
pub struct UnknownApiVersion(pub String);

impl ApiVersion {
    /// Every version, oldest first.
    pub const ALL: [ApiVersion; 4] = [
        Self::V2019_03_31,
        Self::V2021_06_01,
        Self::V2021_10_01,
        Self::V2025_07_01Preview,
    ];

    /// The query-string value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V2019_03_31 => "2019-03-31",
            Self::V2021_06_01 => "2021-06-01",
            Self::V2021_10_01 => "2021-10-01",
            Self::V2025_07_01Preview => "2025-07-01-preview",
        }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiVersion {
    type Err = UnknownApiVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownApiVersion(s.to_string()))
    }
}

/// The device API versions as strings, oldest first: what a server accepts and a client may
/// send. Built from [`ApiVersion::ALL`], so the two cannot differ.
pub const DEVICE_API_VERSIONS: &[&str] = &[
    ApiVersion::ALL[0].as_str(),
    ApiVersion::ALL[1].as_str(),
    ApiVersion::ALL[2].as_str(),
    ApiVersion::ALL[3].as_str(),
];

/// The service API versions the official service SDKs send (they pin older ones too).
pub const SERVICE_API_VERSIONS: &[&str] = &[
    "2017-11-15",
    "2018-04-01",
    "2018-09-01-preview",
    "2019-03-31",
    "2021-06-01",
    "2021-10-01",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_the_string_list_matches_the_enum() {
        assert_eq!("2021-10-01".parse(), Ok(ApiVersion::V2021_10_01));
        let err = "2020-01-01".parse::<ApiVersion>().unwrap_err().to_string();
        assert!(err.contains("2021-06-01"), "{err}");
        let from_enum: Vec<&str> = ApiVersion::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(from_enum, DEVICE_API_VERSIONS);
    }
}
