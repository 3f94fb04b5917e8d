//! One builder per architecture: a short function listing the ops of one
//! layer in forward order, with the checkpoint's names. Adding an
//! architecture means adding a file here, its arm in [`build_layer`], and
//! its config mapping in `crate::loader::config`.

mod bitnet;
mod llama;

use super::layer::LayerBuilder;
use crate::error::{Error, Result};
use crate::loader::config::Architecture;
use crate::weights::LayerWeights;

/// Add the ops of one layer with weights `w` to `b`.
pub(crate) fn build_layer(architecture: Architecture, b: &mut LayerBuilder, w: &LayerWeights) -> Result<()> {
    match architecture {
        Architecture::Llama => llama::layer(b, w),
        Architecture::BitNet => bitnet::layer(b, w),
    }
}

/// A weight an architecture needs that the checkpoint did not give.
fn missing(what: &str) -> Error {
    Error::Invalid(format!("the layer has no '{what}' weight, which this architecture needs"))
}
