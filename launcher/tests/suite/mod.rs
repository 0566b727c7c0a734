mod cgroup;
mod clone3;
mod seccomp;
