//! The `spool` command line.

mod cli;

use std::process::ExitCode;

/// mimalloc: the worker allocates and frees many small buffers per job (messages, records,
/// events) from several threads, where it spends markedly less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
