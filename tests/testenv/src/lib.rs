//! Real test environment for reckon: a local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) and real Git repositories and servers, every process owned by a guard
//! that stops it by PID — on drop, on panic, and (through a watchdog) when the owning process dies.
#![forbid(unsafe_code)]

pub mod audit;
pub mod control_plane;
pub mod git;
pub mod ports;
pub mod process;
