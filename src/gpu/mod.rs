//! The GPU runtime: one [`Gpu`] holds the wgpu instance, adapter, device and
//! queue, the capabilities we chose to use, and the pipeline cache.
//!
//! Decisions made here, once, for the whole engine:
//! - **Limits.** By default we request the adapter's real limits (wgpu's
//!   defaults would cap every binding at 128 MiB even on a desktop GPU).
//!   In *portable mode* we request exactly the WebGPU baseline
//!   (`wgpu::Limits::default()`) and no optional features: this is how a
//!   desktop or CI machine stands in for a browser or a phone.
//! - **Optional features** (shader-f16, subgroups, timestamp queries) are
//!   detected here and recorded in [`Capabilities`]; kernels ask this struct,
//!   never the adapter.
//! - **Errors.** wgpu's default handler panics on an uncaptured error. We
//!   install a handler that records the error instead; every submit and
//!   readback checks the record and returns it as an [`Error`].

mod buffer;
mod pipeline;

pub use buffer::{GpuBuffer, Readback};
pub use pipeline::{Dispatch, KernelKey};

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// Which wgpu backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// `WGPU_BACKEND` if set, else every backend wgpu supports on this platform.
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

/// How to pick and open a GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: BackendChoice,
    /// Case-insensitive substring of the adapter name (e.g. "llvmpipe", "nvidia").
    pub adapter_filter: Option<String>,
    /// Request only the WebGPU baseline limits and no optional features.
    pub portable: bool,
}

impl GpuOptions {
    /// Options from the environment, used by tests and examples:
    /// `WGPU_BACKEND`, `DELTALLM_ADAPTER` (name filter), `DELTALLM_PORTABLE=1`.
    pub fn from_env() -> Self {
        let portable = std::env::var("DELTALLM_PORTABLE").is_ok_and(|v| v != "0" && !v.is_empty());
        let adapter_filter = std::env::var("DELTALLM_ADAPTER").ok().filter(|s| !s.is_empty());
        GpuOptions { backend: BackendChoice::Auto, adapter_filter, portable }
    }
}

/// The optional features the engine uses, decided once when the device opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
}

impl Capabilities {
    fn from_features(features: wgpu::Features) -> Self {
        Capabilities {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        }
    }

    fn features(self) -> wgpu::Features {
        let mut f = wgpu::Features::empty();
        if self.shader_f16 {
            f |= wgpu::Features::SHADER_F16;
        }
        if self.subgroups {
            f |= wgpu::Features::SUBGROUP;
        }
        if self.timestamps {
            f |= wgpu::Features::TIMESTAMP_QUERY;
        }
        f
    }
}

/// A summary of one adapter, for `deltallm info` and for logs.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

/// Errors wgpu reported outside an error scope, kept until someone asks.
#[derive(Default)]
struct ErrorSink {
    first: Option<Error>,
    device_lost: Option<String>,
    /// Error scopes closed whose answer has not come yet (browsers only).
    #[cfg(target_arch = "wasm32")]
    unanswered_scopes: usize,
}

/// An open GPU device and everything the engine keeps per device.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was opened with (the adapter's, or the baseline in portable mode).
    pub limits: wgpu::Limits,
    pub caps: Capabilities,
    pub portable: bool,
    pipelines: pipeline::PipelineCache,
    errors: Arc<Mutex<ErrorSink>>,
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds for the given backend choice.
pub async fn list_adapters(backend: BackendChoice) -> Vec<AdapterSummary> {
    let instance = new_instance(backend.backends());
    instance
        .enumerate_adapters(backend.backends())
        .await
        .into_iter()
        .map(|a| AdapterSummary { info: a.get_info(), limits: a.limits(), features: a.features() })
        .collect()
}

fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    // Prefer the native compute APIs over GL when both expose the same device.
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::BrowserWebGpu => 0,
        wgpu::Backend::Gl => 1,
        wgpu::Backend::Noop => 9,
    }
}

/// Index of the adapter [`Gpu::new`] would choose from `adapters`.
pub fn choose_adapter(adapters: &[AdapterSummary], filter: Option<&str>) -> Option<usize> {
    let filter = filter.map(str::to_lowercase);
    adapters
        .iter()
        .enumerate()
        .filter(|(_, a)| match &filter {
            Some(f) => a.info.name.to_lowercase().contains(f.as_str()),
            None => true,
        })
        .filter(|(_, a)| a.info.backend != wgpu::Backend::Noop)
        .min_by_key(|(_, a)| (backend_rank(a.info.backend), device_type_rank(a.info.device_type)))
        .map(|(i, _)| i)
}

impl Gpu {
    /// Open a device. Async so the same code runs in browsers; native callers
    /// use [`Gpu::new_blocking`].
    pub async fn new(options: &GpuOptions) -> Result<Gpu> {
        let backends = options.backend.backends();
        let instance = new_instance(backends);
        let adapters = instance.enumerate_adapters(backends).await;
        let summaries: Vec<AdapterSummary> = adapters
            .iter()
            .map(|a| AdapterSummary { info: a.get_info(), limits: a.limits(), features: a.features() })
            .collect();
        let adapter = match choose_adapter(&summaries, options.adapter_filter.as_deref()) {
            Some(i) => adapters.into_iter().nth(i).expect("index from the same list"),
            // enumerate_adapters is empty on the web; ask the browser instead.
            None if options.adapter_filter.is_none() => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|_| Error::NoAdapter { filter: String::new() })?,
            None => {
                return Err(Error::NoAdapter {
                    filter: format!(" matching '{}'", options.adapter_filter.as_deref().unwrap_or("")),
                });
            }
        };
        Self::from_adapter(adapter, options.portable).await
    }

    /// Blocking form of [`Gpu::new`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new(options))
    }

    /// Open a device on a chosen adapter.
    pub async fn from_adapter(adapter: wgpu::Adapter, portable: bool) -> Result<Gpu> {
        let info = adapter.get_info();
        let (limits, caps) = if portable {
            (wgpu::Limits::default(), Capabilities::default())
        } else {
            let mut caps = Capabilities::from_features(adapter.features());
            // Subgroup ops are only useful (and only validated) on backends with real support.
            if info.backend == wgpu::Backend::Gl {
                caps.subgroups = false;
            }
            (adapter.limits(), caps)
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("deltallm"),
                required_features: caps.features(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), reason: e.to_string() })?;

        let errors = Arc::new(Mutex::new(ErrorSink::default()));
        {
            let sink = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                log::error!("uncaptured GPU error: {e}");
                if sink.first.is_none() {
                    sink.first = Some(convert_wgpu_error(crate::error::UNKNOWN_GPU_CONTEXT, e));
                }
            }));
            let sink = errors.clone();
            device.set_device_lost_callback(move |reason, message| {
                let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                sink.device_lost = Some(format!("{reason:?}: {message}"));
            });
        }
        log::info!("opened {} ({:?}, {}) portable={portable} caps={caps:?}", info.name, info.backend, info.driver);
        Ok(Gpu {
            adapter,
            device,
            queue,
            info,
            limits,
            caps,
            portable,
            pipelines: pipeline::PipelineCache::default(),
            errors,
        })
    }

    /// The first error wgpu reported since the last check, if any.
    pub fn take_error(&self) -> Result<()> {
        let mut sink = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = &sink.device_lost {
            return Err(Error::DeviceLost { reason: reason.clone() });
        }
        match sink.first.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Report any error wgpu has seen, naming `context` (e.g. "loading
    /// layer 3") in out-of-memory and validation errors. On wasm it first
    /// awaits the queue, which gives the browser's event loop a turn: its
    /// error events arrive and the page can paint progress.
    pub async fn settle(&self, context: &str) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            // The browser answers error scopes in order with the queue, but
            // the answers reach us as separate tasks: wait (a few round trips
            // at most) until every scope closed so far has answered, so an
            // out-of-memory is blamed on the step that caused it.
            for _ in 0..16 {
                self.wait_async().await.map_err(|e| e.in_context(context))?;
                if self.errors.lock().unwrap_or_else(|p| p.into_inner()).unanswered_scopes == 0 {
                    break;
                }
            }
        }
        self.take_error().map_err(|e| e.in_context(context))
    }

    /// Close an error scope opened around one call, turning what it caught
    /// into an error with `describe`. Natively wgpu-core has validated the
    /// call already, so the answer is ready and comes back here. A browser
    /// answers later (its promise resolves on the event loop): the error is
    /// then recorded like an uncaptured one, and the next [`Gpu::settle`] or
    /// read-back reports it, so an out-of-memory while loading still names
    /// its buffer and layer instead of surfacing as a stray validation error.
    pub(crate) fn close_scope(
        &self,
        scope: wgpu::ErrorScopeGuard,
        describe: impl FnOnce(wgpu::Error) -> Error + 'static,
    ) -> Result<()> {
        // Popped now, whatever happens to the answer: scopes nest.
        let answer = scope.pop();
        #[cfg(not(target_arch = "wasm32"))]
        {
            use futures::FutureExt;
            match answer.now_or_never().flatten() {
                Some(e) => Err(describe(e)),
                None => Ok(()),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let errors = self.errors.clone();
            errors.lock().unwrap_or_else(|p| p.into_inner()).unanswered_scopes += 1;
            wasm_bindgen_futures::spawn_local(async move {
                let error = answer.await;
                let mut sink = errors.lock().unwrap_or_else(|p| p.into_inner());
                sink.unanswered_scopes -= 1;
                if let Some(e) = error {
                    log::error!("GPU error: {e}");
                    if sink.first.is_none() {
                        sink.first = Some(describe(e));
                    }
                }
            });
            Ok(())
        }
    }

    /// Largest byte size a single storage binding may have on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size)
    }

    /// Start recording a step. Record every dispatch of a step into one
    /// encoder and [`Gpu::submit`] it once.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Submit one recorded step and report any error wgpu has seen so far.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.queue.submit([encoder.finish()]);
        self.take_error()
    }

    /// Record `dispatches` into one compute pass of `encoder`.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, label: &str, dispatches: &[&Dispatch]) {
        let mut pass =
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
        for d in dispatches {
            d.encode(&mut pass);
        }
    }

    /// Record and submit `dispatches` as one step (convenience for tests and one-off ops).
    pub fn run(&self, label: &str, dispatches: &[&Dispatch]) -> Result<()> {
        let mut encoder = self.encoder(label);
        self.record(&mut encoder, label, dispatches);
        self.submit(encoder)
    }

    /// Wait until the work submitted so far has finished (async; on wasm the
    /// browser resolves it from its event loop, natively we poll the device).
    pub async fn wait_async(&self) -> Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost { reason: e.to_string() })?;
        if rx.await.is_err() {
            self.take_error()?;
            return Err(Error::DeviceLost { reason: "the queue never reported its work done".into() });
        }
        self.take_error()
    }

    /// Blocking form of [`Gpu::wait_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        pollster::block_on(self.wait_async())
    }
}

pub(crate) fn convert_wgpu_error(context: &str, e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { source } => {
            Error::OutOfMemory { context: context.to_string(), message: source.to_string() }
        }
        wgpu::Error::Validation { description, .. } => {
            Error::Validation { context: context.to_string(), message: description }
        }
        wgpu::Error::Internal { description, .. } => {
            Error::Validation { context: context.to_string(), message: description }
        }
    }
}
