mod cli;
mod config;
mod docs;
mod escape_a;
mod escape_b;
mod rootless;
