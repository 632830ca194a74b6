//! `hsmkit-gen-docs OUT_DIR`: hsmkit's man pages and shell completions, generated from the
//! same clap definitions the `hsmkit` binary parses with (its `cli.rs`, compiled in here), so
//! that they cannot drift from the program. scripts/build-deb runs it; nothing generated is
//! committed.
//!
//! Writes `OUT_DIR/man/hsmkit.1` and one page per subcommand (`hsmkit-provision.1`, ...), and
//! `OUT_DIR/completions/` `hsmkit.bash`, `_hsmkit` (zsh) and `hsmkit.fish`.

// The definitions only: the parsing helpers and fields the commands read are unused here.
#[allow(dead_code)]
#[path = "../hsmkit/cli.rs"]
mod cli;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: hsmkit-gen-docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let cmd = cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "hsmkit", &completions)
            .with_context(|| format!("cannot write the {shell} completion"))?;
    }
    Ok(())
}
