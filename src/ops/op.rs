//! The one interface every GPU op of a model step has: a step tells it how
//! many rows it holds and where they start ([`Step`]); the op writes its
//! parameter buffer for that ([`Op::set_step`], parameter writes only,
//! nothing allocated) and then lends its dispatches, in order, to the
//! step's encoder ([`Op::dispatches`]).
//!
//! A model layer is an ordered list of ops (`crate::model::layer`), so a new
//! op joins a layer by implementing this trait, not by being listed by hand
//! in a struct, a constructor, a step setter and a dispatch list.

use super::elementwise::{AddInPlace, GatedMul};
use super::embedding::Embedding;
use super::matmul::Matmul;
use super::quant::{QuantEmbedding, QuantMatmul, QuantizeQ8};
use super::rmsnorm::RmsNorm;
use super::rope::Rope;
use super::ternary::{QuantizeInt8, TernaryMatmul};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu};

/// What one forward step asks of the ops: `rows` tokens at positions
/// `pos0 .. pos0 + rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub rows: u32,
    pub pos0: u32,
}

/// A GPU op of a model step, built once at load and replayed every step.
pub trait Op {
    /// Prepare the next submit for `step` (parameter writes only).
    fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()>;

    /// Append this op's dispatches for the prepared step, in execution order.
    fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>);
}

/// Ops that only need the row count, with one dispatch field or a slice of
/// dispatches (weights split into chunks give one dispatch per chunk).
macro_rules! row_op {
    ($ty:ty, field $dispatch:ident) => {
        impl Op for $ty {
            fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()> {
                self.set_rows(gpu, step.rows)
            }
            fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
                out.push(&self.$dispatch);
            }
        }
    };
    ($ty:ty, method $dispatches:ident) => {
        impl Op for $ty {
            fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()> {
                self.set_rows(gpu, step.rows)
            }
            fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
                out.extend(self.$dispatches());
            }
        }
    };
}

row_op!(RmsNorm, field dispatch);
row_op!(AddInPlace, field dispatch);
row_op!(GatedMul, field dispatch);
row_op!(QuantizeInt8, field dispatch);
row_op!(QuantizeQ8, field dispatch);
row_op!(TernaryMatmul, method dispatch_list);
row_op!(Matmul, method dispatches);
row_op!(QuantMatmul, method dispatches);
row_op!(Embedding, method dispatches);
row_op!(QuantEmbedding, method dispatches);

impl TernaryMatmul {
    fn dispatch_list(&self) -> [&Dispatch; 1] {
        [self.dispatch()]
    }
}

impl Op for Rope {
    fn set_step(&mut self, gpu: &Gpu, step: Step) -> Result<()> {
        Rope::set_step(self, gpu, step.rows, step.pos0)
    }
    fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
        out.push(&self.dispatch);
    }
}
