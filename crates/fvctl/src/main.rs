//! `fvctl`: parses the command line and runs it; errors are printed as `error: ...` (never as a
//! debug dump) and become the documented exit codes (see `fvctl --help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A bug reads as one line, like any other error, not as a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: fvctl hit a bug{place}: {what}; please report it");
    }));
    let cli = fvctl::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(fvctl::errors::exit::FAILED);
        }
    };
    let result = runtime.block_on(fvctl::run(cli));
    // Threads blocked on stdin (the console) must not hold the exit up.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fvctl::errors::Error::Reported(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
