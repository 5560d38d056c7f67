//! The command-line definition of `tunnel-client`, as a library so that `xtask` generates the
//! man page and shell completions from the same clap definitions the binary parses with.
#![forbid(unsafe_code)]

pub mod cli;
