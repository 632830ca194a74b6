//! One module per command.

#[cfg(feature = "demo")]
mod demo;
mod enroll_info;
mod hub;
mod hub_token;
mod pkcs11;
mod plugins;
mod provision;

use crate::cli::{Cli, Command};
use crate::plugin_setup::Context_;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context_::new(&cli.global)?;
    match cli.command {
        Command::Plugins(cmd) => plugins::run(&ctx, cmd),
        Command::EnrollInfo(args) => enroll_info::run(&ctx, &args),
        Command::Provision(args) => provision::run(&ctx, &args),
        Command::HubToken(args) => hub_token::run(&ctx, &args),
        Command::Hub(cmd) => hub::run(&ctx, cmd),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&ctx, &args),
        Command::Pkcs11 { args } => pkcs11::run(&args),
    }
}
