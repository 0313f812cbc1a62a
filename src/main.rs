//! The `nightowl` binary: parse the command line, run it on a Tokio
//! runtime, turn its error into an exit code (2: bad input, 1: failure).
//! The commands are `nightowl::cli::app`.

use std::process::ExitCode;

use clap::Parser;

use nightowl::cli::{self, app, UsageError};

/// The indexer thread builds a tantivy document per line and tantivy's
/// threads free it: glibc's malloc makes that cross-thread churn (and the
/// pattern miner's and rule windows' small vectors) cost about a tenth of
/// the collector's CPU in the ingest profile. mimalloc's per-thread free
/// lists take it, as Vector and Quickwit replace the system allocator too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults keep freed memory for a second, commit arenas
/// eagerly and use transparent huge pages: with a hundred tenants' writers
/// opening and closing under the node's indexing budget, peak RSS rose
/// above glibc's (1.1 GiB against 0.85-0.9 GiB). Returning memory at once,
/// committing on demand and small pages bring it back under.
/// The indexes are `mi_option_e` of the mimalloc v3 bundled with
/// libmimalloc-sys 0.1.49, pinned in Cargo.toml (the crate does not export
/// them as constants; `MIMALLOC_VERBOSE=1` lists the options in order).
///
/// mimalloc reads `allow_thp` once, when it starts (before `main`), so the
/// option alone left huge pages on: every buffer taken again after a purge
/// faulted in 2 MiB zeroed at once, 7% of the collector's CPU in the ingest
/// profile. `PR_SET_THP_DISABLE` is what mimalloc itself does when the
/// option is off at its start: with it the collector took 7% fewer
/// CPU-seconds for the 1M-line file and the 100-tenant peak RSS fell from
/// 858 to 765 MiB (docs/ingest-profile.md).
fn tune_allocator() {
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // SAFETY: plain option stores, made before any other thread exists.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(ALLOW_THP, 0);
    }
    // SAFETY: prctl with integer arguments only. A kernel without the
    // option refuses it, which leaves the process as it was.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match app::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let hint = std::env::current_dir()
                .ok()
                .and_then(|cwd| cli::missing_api_args_hint(&e, &cwd));
            let _ = e.print();
            if let Some(hint) = hint {
                eprintln!("{hint}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
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
