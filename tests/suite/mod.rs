mod cli;
mod docs;
