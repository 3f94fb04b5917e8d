//! A JS `Blob` (a picked `File`, or a response body kept by the Cache API)
//! read by byte range: `blob.slice(a, b).arrayBuffer()`. The browser keeps a
//! big blob on disk, so a model file never has to be whole in the JS heap
//! or in wasm memory; the engine reads one tensor at a time.

use crate::convert::describe;
use deltallm::loader::{ByteSource, LocalFuture};
use js_sys::Uint8Array;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

pub struct BlobSource {
    blob: Blob,
}

impl BlobSource {
    pub fn new(blob: Blob) -> Self {
        BlobSource { blob }
    }
}

impl ByteSource for BlobSource {
    fn len(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, deltallm::Result<Vec<u8>>> {
        Box::pin(async move {
            let failed = |e: wasm_bindgen::JsValue| {
                deltallm::Error::Invalid(format!(
                    "the browser could not read bytes {offset}..{} of the file: {}",
                    offset + len,
                    describe(&e)
                ))
            };
            // Offsets are exact as f64 up to 2^53 bytes.
            let slice = self.blob.slice_with_f64_and_f64(offset as f64, (offset + len) as f64).map_err(failed)?;
            let buffer = JsFuture::from(slice.array_buffer()).await.map_err(failed)?;
            Ok(Uint8Array::new(&buffer).to_vec())
        })
    }
}
