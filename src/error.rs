//! Error types. Every failure a user can cause (bad files, missing GPU
//! features, buffers over a limit) surfaces as an [`Error`] whose message
//! says what went wrong and what to do next; nothing in the engine panics on
//! bad input.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{filter}. Install a Vulkan driver (e.g. `apt-get install mesa-vulkan-drivers libvulkan1` \
         for the CPU-based lavapipe), or pick another backend with --backend / WGPU_BACKEND; `deltallm info` lists adapters"
    )]
    NoAdapter { filter: String },

    #[error("could not open a device on adapter '{adapter}': {reason}")]
    RequestDevice { adapter: String, reason: String },

    #[error("buffer '{label}' needs {size} bytes but this device allows at most {limit} bytes per {what}{hint}")]
    BufferTooLarge { label: String, size: u64, limit: u64, what: &'static str, hint: &'static str },

    #[error(
        "the adapter lacks the feature '{feature}' needed for {needed_for}; run without it (e.g. --portable) or use another adapter"
    )]
    MissingFeature { feature: &'static str, needed_for: &'static str },

    #[error("GPU validation error in {context}: {message}")]
    Validation { context: String, message: String },

    #[error("GPU out of memory in {context}: {message}. Try a smaller model or context, or another adapter")]
    OutOfMemory { context: String, message: String },

    #[error("the GPU device was lost ({reason}); restart the program")]
    DeviceLost { reason: String },

    #[error("reading back buffer '{label}' failed: {reason}")]
    Readback { label: String, reason: String },

    #[error("shape mismatch in {op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error("shader '{name}' failed to {stage}: {message}")]
    Shader { name: String, stage: &'static str, message: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Load(#[from] crate::loader::LoadError),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The context of a GPU error reported outside any call that could name itself.
pub const UNKNOWN_GPU_CONTEXT: &str = "a GPU command";

impl Error {
    /// The loader error inside, if this is one (unwrapping the file name).
    pub fn as_load(&self) -> Option<&crate::loader::LoadError> {
        match self {
            Error::Load(inner) => Some(inner.kind()),
            _ => None,
        }
    }

    /// The same error with `context` naming what was being done, for the
    /// GPU errors reported after the fact: an uncaptured one only knows
    /// [`UNKNOWN_GPU_CONTEXT`] and gets `context` instead; one that knows its
    /// call (e.g. "creating buffer 'layers.1.v_proj'") keeps it after `context`.
    pub fn in_context(self, context: &str) -> Self {
        let join = |old: String| match old.as_str() {
            UNKNOWN_GPU_CONTEXT => context.to_string(),
            _ => format!("{context}, {old}"),
        };
        match self {
            Error::OutOfMemory { context: old, message } => Error::OutOfMemory { context: join(old), message },
            Error::Validation { context: old, message } => Error::Validation { context: join(old), message },
            other => other,
        }
    }

    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::Shape { op, message: message.into() }
    }
}
