//! `ctguard watch` on a terminal (issue 15): an interactive live view on the live engine, in
//! ratatui with crossterm. `model` is the data shown and the effects keys ask for; `app` the
//! state machine over (state, key) → (state, effect); `render` the frames; `group` what a row
//! means to act on; `run` the loop that ties them to the engine, the kernel and the terminal.

pub mod app;
#[cfg(test)]
mod fixture;
pub mod group;
pub mod model;
pub mod render;
pub mod run;
