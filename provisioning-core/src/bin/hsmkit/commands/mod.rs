//! One module per command.

mod enroll_info;
mod pkcs11;
mod plugins;

use crate::cli::{Cli, Command};
use crate::plugin_setup::Context_;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context_::new(&cli.global)?;
    match cli.command {
        Command::Plugins(cmd) => plugins::run(&ctx, cmd),
        Command::EnrollInfo(args) => enroll_info::run(&ctx, &args),
        Command::Pkcs11 { args } => pkcs11::run(&args),
    }
}
