//! deltallm in the browser: the same engine, compiled to wasm32, running on
//! the page's WebGPU adapter, behind the small JS API of web/API.md
//! (`webgpuInfo`, `Engine.load`/`info`/`generate`/`reset`, `runBench`,
//! `benchTable`).
//!
//! Everything that touches the GPU is async: the engine's read-backs await
//! the browser's buffer mapping, so the page's event loop keeps running
//! (and paints streamed tokens) while a model generates. Every failure comes
//! back as a JS `Error` carrying the engine's message; nothing here panics
//! on bad input.
//!
//! On the host this crate is empty (see Cargo.toml), so the workspace's
//! native builds and tests do not depend on it.

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod blob;
#[cfg(target_arch = "wasm32")]
mod convert;

#[cfg(target_arch = "wasm32")]
pub use api::*;
