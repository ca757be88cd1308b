//! Integration tests: the real `evenkeel` binary, real files, real sockets.
//! One test binary (faster to build and link); each area is a module.

mod util;

mod admin;
mod backend_tls;
mod check;
mod dashboard;
mod demo;
mod differential;
mod failures;
mod fleet;
mod foreign;
mod grpc;
mod hardening;
mod history;
mod lint;
mod loadtest;
mod metrics;
mod operations;
mod preflight;
mod prometheus;
mod proxy;
mod report;
mod sim;
mod survive;
mod tcp;
mod tls;
mod watch;
mod websocket;
