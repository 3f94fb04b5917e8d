//! GPU buffers: creation with the device's limits checked up front (so an
//! oversized weight is a clear error, not a wgpu validation panic), uploads,
//! and readback through async mapping that works natively and on wasm.

use super::Gpu;
use crate::error::{Error, Result};
use std::sync::Arc;

/// A storage (or uniform) buffer with its label and byte size.
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    pub buffer: Arc<wgpu::Buffer>,
    pub size: u64,
    pub label: String,
}

impl GpuBuffer {
    /// The whole buffer as a bind-group resource.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }
}

/// Round up to a multiple of 4 bytes (wgpu's copy alignment).
fn align4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

impl Gpu {
    fn check_size(&self, label: &str, size: u64, uniform: bool) -> Result<()> {
        let hint = if self.portable {
            "; portable mode (--portable) holds the device to the WebGPU baseline limits: run without it, or use \
             a smaller model or context"
        } else {
            "; use a smaller model or context, or an adapter with larger limits"
        };
        let (limit, what) = if uniform {
            (self.limits.max_uniform_buffer_binding_size as u64, "uniform binding (maxUniformBufferBindingSize)")
        } else {
            (self.limits.max_storage_buffer_binding_size as u64, "storage binding (maxStorageBufferBindingSize)")
        };
        if size > limit {
            return Err(Error::BufferTooLarge { label: label.to_string(), size, limit, what, hint });
        }
        if size > self.limits.max_buffer_size {
            return Err(Error::BufferTooLarge {
                label: label.to_string(),
                size,
                limit: self.limits.max_buffer_size,
                what: "buffer (maxBufferSize)",
                hint,
            });
        }
        Ok(())
    }

    fn create(&self, label: &str, size: u64, usage: wgpu::BufferUsages, uniform: bool) -> Result<GpuBuffer> {
        // Zero-sized bindings are invalid; keep at least one word.
        let size = align4(size.max(4));
        self.check_size(label, size, uniform)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        let context = format!("creating buffer '{label}'");
        self.close_scope(scope, move |e| super::convert_wgpu_error(&context, e))?;
        Ok(GpuBuffer { buffer: Arc::new(buffer), size, label: label.to_string() })
    }

    /// An uninitialised storage buffer of `size` bytes (read-write, copyable).
    pub fn storage(&self, label: &str, size: u64) -> Result<GpuBuffer> {
        self.create(
            label,
            size,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            false,
        )
    }

    /// A storage buffer holding `data`.
    pub fn storage_from<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<GpuBuffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(label, bytes.len() as u64)?;
        self.write(&buf, 0, bytes);
        Ok(buf)
    }

    /// A uniform buffer holding `data` (a `#[repr(C)]` parameter struct).
    pub fn uniform_from<T: bytemuck::Pod>(&self, label: &str, data: &T) -> Result<GpuBuffer> {
        let bytes = bytemuck::bytes_of(data);
        let buf = self.create(
            label,
            bytes.len().max(16) as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            true,
        )?;
        self.write(&buf, 0, bytes);
        Ok(buf)
    }

    /// Queue a write of `bytes` at `offset`; padded to 4 bytes as wgpu requires.
    pub fn write(&self, buf: &GpuBuffer, offset: u64, bytes: &[u8]) {
        if bytes.len() % 4 == 0 {
            self.queue.write_buffer(&buf.buffer, offset, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(align4(bytes.len() as u64) as usize, 0);
            self.queue.write_buffer(&buf.buffer, offset, &padded);
        }
    }

    /// Start reading `buf` back: records a copy into a staging buffer and
    /// submits it. Await [`Readback::bytes`] (or call [`Gpu::read`]).
    pub fn start_readback(&self, buf: &GpuBuffer) -> Result<Readback> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: buf.size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.encoder("readback");
        encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, 0, buf.size);
        self.submit(encoder)?;
        let (tx, rx) = futures::channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        Ok(Readback { staging, receiver: rx, label: buf.label.clone() })
    }

    /// Read a whole buffer back as `T`s (async; works on wasm).
    pub async fn read_async<T: bytemuck::Pod>(&self, buf: &GpuBuffer) -> Result<Vec<T>> {
        let readback = self.start_readback(buf)?;
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback { label: buf.label.clone(), reason: e.to_string() })?;
        let bytes = readback.bytes().await?;
        self.take_error()?;
        let n = bytes.len() / std::mem::size_of::<T>();
        Ok(bytemuck::pod_collect_to_vec(&bytes[..n * std::mem::size_of::<T>()]))
    }

    /// Blocking read for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<T: bytemuck::Pod>(&self, buf: &GpuBuffer) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(buf))
    }
}

/// A readback in flight.
pub struct Readback {
    staging: wgpu::Buffer,
    receiver: futures::channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    label: String,
}

impl Readback {
    /// Wait for the mapping and copy the bytes out.
    pub async fn bytes(self) -> Result<Vec<u8>> {
        let failed = |reason: String| Error::Readback { label: self.label.clone(), reason };
        match self.receiver.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => {
                return Err(failed("the mapping callback never ran (device lost?)".into()));
            }
        }
        let bytes = {
            let view = self.staging.get_mapped_range(..).map_err(|e| failed(e.to_string()))?;
            view.to_vec()
        };
        self.staging.unmap();
        Ok(bytes)
    }
}
