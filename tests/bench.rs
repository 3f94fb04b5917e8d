//! `deltallm bench` must never rot: the quick suite runs in-process on the
//! default adapter (`WGPU_BACKEND`, `DELTALLM_ADAPTER`, `DELTALLM_PORTABLE`
//! as for the other GPU tests) and its JSON must hold every row with a
//! positive time. Nothing here depends on how fast anything is.

use deltallm::bench::copy::Copy;
use deltallm::bench::e2e::E2eOptions;
use deltallm::bench::timer::percentile;
use deltallm::bench::{self, BenchOptions, Report};
use deltallm::{Gpu, GpuOptions};
use std::sync::OnceLock;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter (install mesa-vulkan-drivers)"))
}

#[test]
fn quick_suite_json_has_every_row_with_positive_times() {
    let gpu = gpu();
    let options = BenchOptions { quick: true, ..Default::default() };
    let e2e = E2eOptions::new(true);
    let mut lines = 0;
    let report = bench::run(gpu, &options, Some(&e2e), &mut |_| lines += 1).unwrap();
    assert!(lines > 0, "no progress reported");

    let json = serde_json::to_string(&report).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schema"], bench::SCHEMA_VERSION);
    assert!(!value["adapter"]["name"].as_str().unwrap().is_empty());
    assert!(value["adapter"]["limits"]["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    let timing = value["timing"].as_str().unwrap();
    assert!(timing == "gpu_timestamps" || timing == "wall_clock", "timing {timing}");

    let kernels = value["kernels"].as_array().unwrap();
    for family in ["copy", "ternary gemv", "ternary gemm", "f16 gemv", "f32 gemv", "lm_head", "rmsnorm", "rope"] {
        assert!(kernels.iter().any(|r| r["name"].as_str().unwrap().starts_with(family)), "no {family} row");
    }
    for family in [
        "attention decode",
        "attention hybrid decode",
        "attention hybrid prefill",
        "delta build",
        "argmax",
        "quantize int8",
    ] {
        assert!(kernels.iter().any(|r| r["name"].as_str().unwrap().starts_with(family)), "no {family} row");
    }
    let mut names: Vec<&str> = kernels.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), kernels.len(), "row names must be unique (--compare matches by name)");
    for r in kernels {
        for field in ["median_ms", "p10_ms", "p90_ms", "wall_median_ms", "gb_per_s"] {
            let v = r[field].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{}: {field} = {v}", r["name"]);
        }
        assert!(r["p10_ms"].as_f64() <= r["median_ms"].as_f64() && r["median_ms"].as_f64() <= r["p90_ms"].as_f64());
        assert!(r["reps"].as_u64().unwrap() >= 3);
        assert!(r["pct_of_copy"].as_f64().unwrap() > 0.0);
    }
    let e2e_rows = value["e2e"].as_array().unwrap();
    // Two models × two prompt lengths × (prefill, decode) × (dense, DeltaLLM).
    assert_eq!(e2e_rows.len(), 16, "{e2e_rows:#?}");
    for r in e2e_rows {
        let name = r["name"].as_str().unwrap();
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0, "{name}");
        // DeltaLLM rows carry the sparsity measured on the run (calibrated to 60 %).
        match r["delta_sparsity"].as_f64() {
            Some(d) => assert!(name.contains("delta") && (0.3..0.95).contains(&d), "{name}: {d}"),
            None => assert!(!name.contains("delta"), "{name} has no delta sparsity"),
        }
        // Every row counts its dispatches; decode rows the bytes a token reads
        // (more than the lm_head's alone) and the bandwidth that makes.
        assert!(r["dispatches"].as_u64().unwrap() > 0, "{name}");
        let (bytes, head, gb_per_s) = (&r["bytes_per_token"], &r["head_bytes_per_token"], &r["gb_per_s"]);
        if name.contains("decode") {
            let (bytes, head) = (bytes.as_u64().unwrap(), head.as_u64().unwrap());
            assert!(0 < head && head < bytes, "{name}: {head} of {bytes}");
            assert!(gb_per_s.as_f64().unwrap() > 0.0, "{name}");
        } else {
            assert!(bytes.is_null() && head.is_null() && gb_per_s.is_null(), "{name}");
        }
    }
    // A decode step records what a prefill step does (one dispatch per op and chunk).
    let dispatches = |name: &str| e2e_rows.iter().find(|r| r["name"] == name).unwrap()["dispatches"].as_u64();
    assert_eq!(dispatches("llama-tiny decode at 8 (1/2 layers)"), dispatches("llama-tiny prefill 8 (1/2 layers)"));
    for name in [
        "bitnet-tiny prefill 16 (1/2 layers)",
        "llama-tiny decode at 8 (1/2 layers)",
        "llama-tiny decode at 16 (1/2 layers) delta",
    ] {
        assert!(e2e_rows.iter().any(|r| r["name"] == name), "no row {name}");
    }
    // The JSON reads back into a Report (what --compare does).
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.kernels.len(), report.kernels.len());
    assert!(report.table().contains("ternary gemv"));
    assert!(report.table().contains("| dispatches | MB/token | GB/s |"));
}

#[test]
fn filter_selects_rows_by_substring() {
    let options = BenchOptions { quick: true, filter: Some("RMSNORM".into()), ..Default::default() };
    let report = bench::run(gpu(), &options, None, &mut |_| {}).unwrap();
    assert_eq!(report.kernels.len(), 1);
    assert!(report.kernels[0].name.starts_with("rmsnorm"));
    // Without the copy row there is nothing to relate to.
    assert_eq!(report.kernels[0].pct_of_copy, None);
}

#[test]
fn copy_kernel_copies() {
    let gpu = gpu();
    let bytes = 16 * 1000 + 16 * 7;
    let data: Vec<u32> = (0..bytes / 4).map(|i| (i as u32).wrapping_mul(2_654_435_761)).collect();
    let src = gpu.storage_from("src", &data).unwrap();
    let dst = gpu.storage_from("dst", &vec![u32::MAX; data.len()]).unwrap();
    let copy = Copy::new(gpu, &src, &dst, bytes as u64).unwrap();
    gpu.run("copy", &[&copy.dispatch]).unwrap();
    assert_eq!(gpu.read::<u32>(&dst).unwrap(), data);
    assert!(Copy::new(gpu, &src, &dst, 15).is_err(), "not a multiple of 16");
    assert!(Copy::new(gpu, &src, &dst, bytes as u64 + 16).is_err(), "longer than the buffers");
}

#[test]
fn percentiles_by_nearest_rank() {
    let v = [5.0, 1.0, 4.0, 2.0, 3.0];
    assert_eq!(percentile(&v, 50.0), 3.0);
    assert_eq!(percentile(&v, 0.0), 1.0);
    assert_eq!(percentile(&v, 100.0), 5.0);
    assert!(percentile(&[], 50.0).is_nan());
}

/// A minimal report as `--json` writes it (fields left out take defaults).
fn report_json(adapter: &str, rows: &[(&str, f64)], e2e: &[(&str, f64)]) -> String {
    let kernels: Vec<_> = rows.iter().map(|(name, ms)| serde_json::json!({"name": name, "median_ms": ms})).collect();
    let e2e: Vec<_> = e2e.iter().map(|(name, ms)| serde_json::json!({"name": name, "median_ms": ms})).collect();
    serde_json::json!({
        "schema": 1, "adapter": {"name": adapter, "backend": "Vulkan"}, "timing": "wall_clock",
        "kernels": kernels, "e2e": e2e,
    })
    .to_string()
}

#[test]
fn compare_matches_rows_by_name() {
    let a: Report =
        serde_json::from_str(&report_json("A", &[("x", 2.0), ("y", 1.0), ("only a", 1.0)], &[("decode", 10.0)]))
            .unwrap();
    let b: Report = serde_json::from_str(&report_json("B", &[("y", 3.0), ("x", 1.0)], &[("decode", 5.0)])).unwrap();
    let rows = bench::compare(&a, &b);
    let names: Vec<&str> = rows.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["x", "y", "decode"]);
    assert_eq!(rows[0].b_over_a, 0.5);
    assert_eq!(rows[1].b_over_a, 3.0);
    assert_eq!(rows[2].b_over_a, 0.5);
    let table = bench::comparison_table(&a, &b);
    assert!(table.contains("| x | 2.00 | 1.00 | 0.50× |"), "{table}");
    assert!(table.contains("1 row(s) only in A, 0 only in B"), "{table}");
}

#[test]
fn compare_cli_prints_ratios_and_rejects_other_json() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, bad) = (dir.path().join("a.json"), dir.path().join("b.json"), dir.path().join("bad.json"));
    std::fs::write(&a, report_json("A", &[("ternary gemv 2560->6912", 2.0)], &[])).unwrap();
    std::fs::write(&b, report_json("B", &[("ternary gemv 2560->6912", 4.0)], &[])).unwrap();
    std::fs::write(&bad, "{\"not\": \"a report\"").unwrap();
    let exe = env!("CARGO_BIN_EXE_deltallm");
    let out = std::process::Command::new(exe).args(["bench", "--compare"]).arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("| ternary gemv 2560->6912 | 2.00 | 4.00 | 2.00× |"), "{stdout}");
    let out = std::process::Command::new(exe).args(["bench", "--compare"]).arg(&a).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a `deltallm bench --json` file"));
}
