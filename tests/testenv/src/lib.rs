//! Real test environment for reckon: real Git repositories and servers (`git`), and — from the
//! foundation issue — a local Kubernetes control plane.

pub mod git;
