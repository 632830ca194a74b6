//! One module per command.

mod check;
mod config_new;
#[cfg(feature = "demo")]
mod demo;
mod enroll_info;
mod hub;
mod hub_token;
mod pkcs11;
mod plugins;
mod provision;
mod renew;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::plugin_setup::Context_;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    // `check` reports an unusable config as one of its findings, so it makes its own context.
    if let Command::Check(args) = &cli.command {
        return check::run(&cli.global, args);
    }
    let ctx = Context_::new(&cli.global)?;
    match cli.command {
        Command::Plugins(cmd) => plugins::run(&ctx, cmd),
        Command::EnrollInfo(args) => enroll_info::run(&ctx, &args),
        Command::Provision(args) => provision::run(&ctx, &args),
        Command::Renew(args) => renew::run(&ctx, &args),
        Command::HubToken(args) => hub_token::run(&ctx, &args),
        Command::Hub(cmd) => hub::run(&ctx, cmd),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&ctx, &args),
        Command::Config(ConfigCommand::New(args)) => config_new::run(&ctx, &args),
        Command::Check(_) => unreachable!("handled above"),
        Command::Pkcs11 { args } => pkcs11::run(&ctx, &args),
    }
}
