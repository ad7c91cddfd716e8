//! The one integration test binary (each extra binary relinks everything).

mod cli;
mod log_behaviour;
mod log_corruption;
mod log_crash;
mod log_format;
mod log_model;
mod log_support;
