mod cli;
mod docs;
mod rootless;
