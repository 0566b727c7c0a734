mod cli;
mod config;
mod creds;
mod docs;
mod escape_a;
mod escape_b;
mod rootless;
mod sessions;
