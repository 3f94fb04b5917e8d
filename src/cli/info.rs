//! `deltallm info`: the adapters wgpu finds, their limits and features, and
//! the one deltallm would use, opened for real.

use super::args::GpuArgs;
use clap::Args;
use deltallm::gpu;

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Print every limit, not just the ones the engine cares about.
    #[arg(long)]
    all_limits: bool,
}

pub fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let options = args.gpu.options();
    let adapters = pollster::block_on(gpu::list_adapters(options.backend));
    if adapters.is_empty() {
        return Err(deltallm::Error::NoAdapter { filter: String::new() }.into());
    }
    let chosen = gpu::choose_adapter(&adapters, options.adapter_filter.as_deref());
    for (i, a) in adapters.iter().enumerate() {
        let mark = if Some(i) == chosen { "  <- deltallm uses this one" } else { "" };
        println!("[{i}] {}{mark}", a.info.name);
        println!("    backend:     {:?}", a.info.backend);
        println!("    device type: {:?}", a.info.device_type);
        println!("    vendor/device: {:#06x}/{:#06x}", a.info.vendor, a.info.device);
        println!("    driver:      {} {}", a.info.driver, a.info.driver_info);
        let features = [
            ("shader-f16", wgpu::Features::SHADER_F16),
            ("subgroups", wgpu::Features::SUBGROUP),
            ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
        ];
        let names: Vec<String> = features
            .iter()
            .map(|(name, f)| format!("{name}={}", if a.features.contains(*f) { "yes" } else { "no" }))
            .collect();
        println!("    features:    {}", names.join(" "));
        let l = &a.limits;
        println!(
            "    limits:      storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations {}, \
             storage buffers/stage {}, workgroups/dim {}, subgroup size {}..{}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
            a.info.subgroup_min_size,
            a.info.subgroup_max_size,
        );
        if args.all_limits {
            println!("    all limits:  {:#?}", a.limits);
        }
    }
    if options.portable {
        let b = wgpu::Limits::default();
        println!(
            "\nportable mode: the device is opened with the WebGPU baseline (storage binding {} MiB, workgroup storage {} KiB, {} invocations) and no optional features",
            b.max_storage_buffer_binding_size >> 20,
            b.max_compute_workgroup_storage_size >> 10,
            b.max_compute_invocations_per_workgroup
        );
    }
    match chosen {
        Some(_) => {
            // Open it for real: proves the device works with the limits we ask for.
            let gpu = deltallm::Gpu::new_blocking(&options)?;
            println!(
                "\nopened: {} ({:?}), portable={}, using shader-f16={} subgroups={} timestamps={}",
                gpu.info.name,
                gpu.info.backend,
                gpu.portable,
                gpu.caps.shader_f16,
                gpu.caps.subgroups,
                gpu.caps.timestamps
            );
            Ok(())
        }
        None => Err(deltallm::Error::NoAdapter {
            filter: format!(" matching '{}'", options.adapter_filter.unwrap_or_default()),
        }
        .into()),
    }
}
