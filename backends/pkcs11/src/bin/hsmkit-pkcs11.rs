//! `hsmkit-pkcs11`: sets a device up in a PKCS#11 token.
//!
//! `init` creates a P-256 key pair in the token and a certificate for it (self-signed through
//! the token, or signed by a CA key given as files) and stores the certificate in the token.
//! `import-hmac` stores a DPS symmetric key as a non-extractable HMAC secret. The PIN comes from
//! a file or an environment variable, never from the command line.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use hsmkit_backend_pkcs11::config::PinSource;
use hsmkit_backend_pkcs11::provision::{import_hmac_key, init_device, CaFiles, InitOptions};
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "hsmkit-pkcs11",
    version,
    about = "Set up a device identity in a PKCS#11 token"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a P-256 key pair and its certificate in the token.
    Init(InitArgs),
    /// Store a symmetric key (base64, as DPS shows it) as a non-extractable HMAC key.
    ImportHmac(ImportArgs),
}

/// The token settings. `hsmkit pkcs11` passes `module`, `token_uri`, `pin_file` and `pin_env`
/// from `[plugins.pkcs11]` of hsmkit's config in these variables (`hide_env_values`: the
/// names are shown, not the values), so that the set-up uses the token the plugin will;
/// a flag overrides.
#[derive(Args)]
struct TokenArgs {
    /// Path of the PKCS#11 module.
    #[arg(long, env = "HSMKIT_PKCS11_MODULE", hide_env_values = true)]
    module: PathBuf,
    /// Token URI, e.g. pkcs11:token=LABEL or pkcs11:serial=SERIAL.
    #[arg(long, env = "HSMKIT_PKCS11_TOKEN_URI", hide_env_values = true)]
    token_uri: String,
    /// File holding the user PIN.
    #[arg(
        long,
        env = "HSMKIT_PKCS11_PIN_FILE",
        hide_env_values = true,
        conflicts_with = "pin_env",
        required_unless_present = "pin_env"
    )]
    pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    #[arg(long, env = "HSMKIT_PKCS11_PIN_ENV", hide_env_values = true)]
    pin_env: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl TokenArgs {
    fn pin(&self) -> PinSource {
        match (&self.pin_file, &self.pin_env) {
            (Some(f), _) => PinSource::File(f.clone()),
            (None, Some(v)) => PinSource::Env(v.clone()),
            // clap enforces one of the two.
            (None, None) => PinSource::Env("HSMKIT_PKCS11_PIN".into()),
        }
    }
}

#[derive(Args)]
struct InitArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// Label of the key pair and certificate objects.
    #[arg(long)]
    label: String,
    /// Common name of the certificate: the DPS registration id.
    #[arg(long)]
    common_name: String,
    /// CA certificate (PEM) to sign with instead of self-signing.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// CA private key (PEM, P-256).
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Certificate validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// Label of the key object (use the registration id).
    #[arg(long)]
    label: String,
    /// File holding the key in base64.
    #[arg(long)]
    key_file: PathBuf,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Init(args) => {
            let out = init_device(&InitOptions {
                module: args.token.module.clone(),
                token: Pkcs11Uri::parse(&args.token.token_uri)?,
                pin: args.token.pin(),
                label: args.label,
                id: None,
                common_name: args.common_name,
                ca: match (args.ca_cert, args.ca_key) {
                    (Some(cert_pem), Some(key_pem)) => Some(CaFiles { cert_pem, key_pem }),
                    _ => None,
                },
                validity_days: args.days,
            })?;
            if args.token.json {
                let json = serde_json::json!({
                    "registrationId": out.registration_id,
                    "label": out.label,
                    "id": out.id_hex,
                    "keyUri": out.key_uri,
                    "certUri": out.cert_uri,
                    "certificate": out.certificate_pem,
                });
                println!("{json}");
            } else {
                println!("Registration Id: {}", out.registration_id);
                println!("key_uri = \"{}\"", out.key_uri);
                println!("cert_uri = \"{}\"", out.cert_uri);
                print!("Device certificate:\n{}", out.certificate_pem);
            }
        }
        Command::ImportHmac(args) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(&args.key_file)
                    .with_context(|| format!("reading {}", args.key_file.display()))?,
            );
            let key = Zeroizing::new(decode_base64(text.trim())?);
            import_hmac_key(
                &args.token.module,
                &Pkcs11Uri::parse(&args.token.token_uri)?,
                &args.token.pin(),
                &args.label,
                &key,
            )?;
            if args.token.json {
                println!(
                    "{}",
                    serde_json::json!({"registrationId": args.label, "status": "imported"})
                );
            } else {
                println!("Imported the HMAC key as `{}`", args.label);
            }
        }
    }
    Ok(())
}

fn decode_base64(text: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("the key file is not base64")
}
