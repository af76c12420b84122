//! The `mp-auth` binary: parse the command line and hand off to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    mp_auth::cli::main()
}
