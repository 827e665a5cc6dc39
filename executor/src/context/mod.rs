//! The build context as COPY and ADD see it: `.dockerignore` rules ([`ignore`]) and
//! Go-style source patterns ([`pattern`]).

pub mod ignore;
pub mod pattern;
