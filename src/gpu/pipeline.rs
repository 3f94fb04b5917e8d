//! Compute pipelines, built once per (shader, entry point, defines,
//! override constants) and cached, and [`Dispatch`]: a pipeline with its bind
//! group and workgroup count, created at load time and replayed every step.
//!
//! Binding convention for every shader in `shaders/`: one bind group (0),
//! bindings numbered 0..n in the order the op passes its buffers.

use super::{Gpu, GpuBuffer};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What identifies a compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    /// Shader name in the [`crate::shaders`] registry.
    pub shader: &'static str,
    pub entry: &'static str,
    /// Preprocessor defines (`#ifdef NAME`), e.g. "SUBGROUPS", "F16".
    pub defines: Vec<&'static str>,
    /// WGSL `override` constants, as (name, value bits of an f64).
    constants: Vec<(&'static str, u64)>,
}

impl KernelKey {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        KernelKey { shader, entry, defines: Vec::new(), constants: Vec::new() }
    }

    pub fn define(mut self, name: &'static str) -> Self {
        if !self.defines.contains(&name) {
            self.defines.push(name);
            self.defines.sort_unstable();
        }
        self
    }

    pub fn define_if(self, cond: bool, name: &'static str) -> Self {
        if cond { self.define(name) } else { self }
    }

    pub fn constant(mut self, name: &'static str, value: f64) -> Self {
        self.constants.retain(|(n, _)| *n != name);
        self.constants.push((name, value.to_bits()));
        self.constants.sort_unstable();
        self
    }
}

#[derive(Default)]
pub(super) struct PipelineCache {
    pipelines: Mutex<HashMap<KernelKey, Arc<wgpu::ComputePipeline>>>,
    created: std::sync::atomic::AtomicUsize,
}

/// One recorded kernel launch: pipeline, bind group and grid, built once.
pub struct Dispatch {
    pub label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

impl Dispatch {
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.push_debug_group(&self.label);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        if x > 0 && y > 0 && z > 0 {
            pass.dispatch_workgroups(x, y, z);
        }
        pass.pop_debug_group();
    }

    /// Change the grid (e.g. the number of tokens in this step) without
    /// rebuilding anything.
    pub fn set_workgroups(&mut self, workgroups: [u32; 3]) {
        self.workgroups = workgroups;
    }
}

impl Gpu {
    /// The compiled pipeline for `key`, from the cache or built now.
    pub fn pipeline(&self, key: &KernelKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(p.clone());
        }
        if key.defines.contains(&"F16") && !self.caps.shader_f16 {
            return Err(Error::MissingFeature { feature: "shader-f16", needed_for: key.shader });
        }
        if key.defines.contains(&"SUBGROUPS") && !self.caps.subgroups {
            return Err(Error::MissingFeature { feature: "subgroups", needed_for: key.shader });
        }
        let source = crate::shaders::preprocessed(key.shader, &key.defines)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.shader),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|(n, b)| (*n, f64::from_bits(*b))).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.shader),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let name = format!("{}::{} {:?}", key.shader, key.entry, key.defines);
        self.close_scope(scope, move |e| Error::Shader { name, stage: "compile", message: e.to_string() })?;
        let pipeline = Arc::new(pipeline);
        self.pipelines.created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    /// How many pipelines this device has compiled (a test checks that a
    /// decode step compiles none).
    pub fn pipelines_created(&self) -> usize {
        self.pipelines.created.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Build a dispatch binding `buffers` to bindings 0..n in order.
    pub fn dispatch(
        &self,
        label: &str,
        key: &KernelKey,
        buffers: &[&GpuBuffer],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let resources = buffers.iter().map(|b| b.binding()).collect();
        self.dispatch_with(label, key, resources, workgroups)
    }

    /// Build a dispatch from explicit binding resources (for buffer ranges).
    pub fn dispatch_with(
        &self,
        label: &str,
        key: &KernelKey,
        resources: Vec<wgpu::BindingResource<'_>>,
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::Invalid(format!(
                "{label}: grid {workgroups:?} exceeds the device's {max} workgroups per dimension"
            )));
        }
        let pipeline = self.pipeline(key)?;
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &layout,
            entries: &entries,
        });
        let context = format!("binding buffers for '{label}'");
        self.close_scope(scope, move |e| super::convert_wgpu_error(&context, e))?;
        Ok(Dispatch { label: label.to_string(), pipeline, bind_group, workgroups })
    }

    /// A grid of `count` workgroups, folded into y when it passes the
    /// per-dimension limit. Shaders recover the linear index as
    /// `wid.x + wid.y * num_workgroups.x` and return when it is past the end.
    pub fn grid(&self, count: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if count <= max {
            [count, 1, 1]
        } else {
            let y = count.div_ceil(max);
            [count.div_ceil(y), y, 1]
        }
    }
}
