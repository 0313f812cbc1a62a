//! The `nightowl` binary: parse the command line, run it on a Tokio
//! runtime, turn its error into an exit code (2: bad input, 1: failure).
//! The commands are `nightowl::cli::app`.

use std::process::ExitCode;

use clap::Parser;

use nightowl::cli::{self, app, UsageError};

fn main() -> ExitCode {
    let cli = app::Cli::parse();
    if !cli.is_daemon() {
        restore_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nightowl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nightowl: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A command's output piped into `head` (or any reader that stops early)
/// must end quietly, as `cat` does, not panic in `println!`: the default
/// SIGPIPE action ends the process when the reader is gone. Rust ignores
/// SIGPIPE by default; the daemons keep it ignored, because a peer closing
/// a socket must never kill them (their sockets get EPIPE instead).
fn restore_sigpipe() {
    // SAFETY: signal(2) with a valid signal number and the default action,
    // before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
