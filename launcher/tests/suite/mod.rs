mod cgroup;
mod seccomp;
mod worker;
