//! A plain copy kernel (shaders/copy.wgsl): the bandwidth a simple kernel
//! practically reaches on this adapter, the yardstick for every other row.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};
use crate::ops::gpu_params;

/// Name prefix of the copy rows; [`super::relate_to_copy`] looks for it.
pub const ROW_PREFIX: &str = "copy";

const WORKGROUP: u32 = 256;
/// Bytes per element (one vec4<u32>).
const ELEMENT_BYTES: u64 = 16;

gpu_params! { Params { count: u32, _pad: [u32; 3] } }

/// `dst[0..bytes] = src[0..bytes]`, `bytes` a multiple of 16.
pub struct Copy {
    pub dispatch: Dispatch,
    _params: GpuBuffer,
    pub bytes: u64,
}

impl Copy {
    pub fn new(gpu: &Gpu, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) -> Result<Copy> {
        if bytes == 0 || !bytes.is_multiple_of(ELEMENT_BYTES) {
            return Err(Error::shape("copy", format!("{bytes} bytes is not a positive multiple of 16")));
        }
        crate::ops::check_len("copy", src, bytes, 1)?;
        crate::ops::check_len("copy", dst, bytes, 1)?;
        let count = u32::try_from(bytes / ELEMENT_BYTES)
            .map_err(|_| Error::shape("copy", format!("{bytes} bytes is too many for one dispatch")))?;
        let params = gpu.uniform_from("copy.params", &Params { count, _pad: [0; 3] })?;
        let dispatch = gpu.dispatch(
            "copy",
            &KernelKey::new("copy", "main"),
            &[&params, src, dst],
            gpu.grid(count.div_ceil(WORKGROUP)),
        )?;
        Ok(Copy { dispatch, _params: params, bytes })
    }
}
