use crate::common::*;
use deltallm::ops::matmul::{DenseWeight, Matmul, MatmulKernel, WeightFormat};
use deltallm::{Error, Gpu, cpu};
use half::{bf16, f16};

/// f32 accumulation over k ≤ 301 against f64: a few ulps of the result.
const F32_TOLERANCE: f64 = 1e-5;

/// A random weight in `format`, uploaded with at most `chunk_rows` rows per
/// chunk, and the f32 values the GPU sees (16-bit formats rounded first).
fn random_weight(
    gpu: &Gpu,
    seed: u64,
    format: WeightFormat,
    rows: u32,
    cols: u32,
    chunk_rows: Option<u32>,
) -> (DenseWeight, Vec<f32>) {
    let values = random_f32(&mut rng(seed), (rows * cols) as usize, 1.0);
    match format {
        WeightFormat::F32 => {
            let weight = DenseWeight::upload_f32_with_chunk_rows(gpu, "w", &values, rows, cols, chunk_rows).unwrap();
            (weight, values)
        }
        WeightFormat::F16 => {
            let halves: Vec<f16> = values.iter().map(|v| f16::from_f32(*v)).collect();
            let weight = DenseWeight::upload_f16_with_chunk_rows(gpu, "w", &halves, rows, cols, chunk_rows).unwrap();
            (weight, cpu::matmul::f16_to_f32(&halves))
        }
        WeightFormat::Bf16 => {
            let halves: Vec<bf16> = values.iter().map(|v| bf16::from_f32(*v)).collect();
            let weight = DenseWeight::upload_bf16_with_chunk_rows(gpu, "w", &halves, rows, cols, chunk_rows).unwrap();
            (weight, cpu::matmul::bf16_to_f32(&halves))
        }
    }
}

/// Run `weight` on `tokens` random rows with `kernel`; returns (gpu, cpu) outputs.
fn run_matmul(
    gpu: &Gpu,
    weight: &DenseWeight,
    values: &[f32],
    tokens: u32,
    kernel: MatmulKernel,
) -> (Vec<f32>, Vec<f32>) {
    let (rows, cols) = (weight.rows, weight.cols);
    let x = random_f32(&mut rng(tokens as u64 * 1000 + cols as u64), (tokens * cols) as usize, 2.0);
    let xb = gpu.storage_from("x", &x).unwrap();
    let y = poisoned(gpu, "y", (tokens * rows) as usize);
    let mut op = Matmul::new(gpu, weight, &xb, &y, tokens).unwrap();
    op.set_rows_with(gpu, tokens, kernel).unwrap();
    op.run(gpu).unwrap();
    let got: Vec<f32> = gpu.read(&y).unwrap();
    (got, cpu::matmul::matmul(values, &x, tokens as usize, rows as usize, cols as usize))
}

const SHAPES: &[(u32, u32, u32)] = &[(1, 37, 70), (5, 129, 301), (1, 64, 256), (2, 7, 3), (70, 130, 45), (3, 1, 1)];

#[test]
fn matmul_f32_matches_cpu_with_gemv_and_gemm() {
    let gpu = gpu();
    for (i, &(tokens, rows, cols)) in SHAPES.iter().enumerate() {
        let (weight, values) = random_weight(gpu, i as u64, WeightFormat::F32, rows, cols, None);
        for kernel in [MatmulKernel::Gemv, MatmulKernel::Gemm] {
            let (got, want) = run_matmul(gpu, &weight, &values, tokens, kernel);
            assert_close(&format!("f32 {kernel:?} {tokens}x{rows}x{cols}"), &got, &want, F32_TOLERANCE);
        }
    }
}

#[test]
fn matmul_f16_and_bf16_match_cpu_on_the_same_rounded_weights() {
    let gpu = gpu();
    // Odd k exercises the zero pad half of each packed row.
    let shapes = [(1u32, 37u32, 71u32), (5, 129, 301), (3, 20, 64), (66, 70, 33), (1, 5, 1)];
    for format in [WeightFormat::F16, WeightFormat::Bf16] {
        for (i, &(tokens, rows, cols)) in shapes.iter().enumerate() {
            let (weight, values) = random_weight(gpu, 10 + i as u64, format, rows, cols, None);
            for kernel in [MatmulKernel::Gemv, MatmulKernel::Gemm] {
                let (got, want) = run_matmul(gpu, &weight, &values, tokens, kernel);
                assert_close(&format!("{format:?} {kernel:?} {tokens}x{rows}x{cols}"), &got, &want, F32_TOLERANCE);
            }
        }
    }
}

#[test]
fn a_weight_split_into_chunks_gives_the_same_result() {
    let gpu = gpu();
    let (rows, cols) = (37u32, 45u32);
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Bf16] {
        let (whole, values) = random_weight(gpu, 20, format, rows, cols, None);
        // 10 + 10 + 10 + 7 rows: three full chunks and an uneven last one.
        let (split, _) = random_weight(gpu, 20, format, rows, cols, Some(10));
        assert_eq!(whole.chunks.len(), 1);
        let chunk_rows: Vec<u32> = split.chunks.iter().map(|c| c.rows).collect();
        assert_eq!(chunk_rows, vec![10, 10, 10, 7]);
        for (tokens, kernel) in [(1, MatmulKernel::Gemv), (3, MatmulKernel::Gemv), (5, MatmulKernel::Gemm)] {
            let (got_whole, want) = run_matmul(gpu, &whole, &values, tokens, kernel);
            let (got_split, _) = run_matmul(gpu, &split, &values, tokens, kernel);
            let what = format!("{format:?} {kernel:?} split x{tokens}");
            assert_close(&what, &got_split, &want, F32_TOLERANCE);
            // Each output is the same sum in the same order, whichever chunk holds its row.
            assert_eq!(got_split, got_whole, "{what}: differs from the unsplit weight");
        }
    }
}

#[test]
fn set_rows_picks_the_kernel_and_writes_only_those_tokens() {
    let gpu = gpu();
    let (max_tokens, rows, cols) = (6u32, 33u32, 40u32);
    let (weight, values) = random_weight(gpu, 30, WeightFormat::F16, rows, cols, Some(12));
    let x = random_f32(&mut rng(31), (max_tokens * cols) as usize, 1.0);
    let xb = gpu.storage_from("x", &x).unwrap();
    let y = poisoned(gpu, "y", (max_tokens * rows) as usize);
    let mut op = Matmul::new(gpu, &weight, &xb, &y, max_tokens).unwrap();
    assert_eq!(op.kernel(), MatmulKernel::Gemm);
    for tokens in [1u32, 4] {
        gpu.write(&y, 0, bytemuck::cast_slice(&vec![f32::NAN; (max_tokens * rows) as usize]));
        op.set_rows(gpu, tokens).unwrap();
        assert_eq!(op.kernel(), MatmulKernel::for_tokens(tokens));
        op.run(gpu).unwrap();
        let got: Vec<f32> = gpu.read(&y).unwrap();
        let split = (tokens * rows) as usize;
        let want =
            cpu::matmul::matmul(&values, &x[..(tokens * cols) as usize], tokens as usize, rows as usize, cols as usize);
        assert_close(&format!("first {tokens} tokens"), &got[..split], &want, F32_TOLERANCE);
        assert!(got[split..].iter().all(|v| v.is_nan()), "tokens past set_rows({tokens}) were written");
    }
    assert_eq!(op.kernel(), MatmulKernel::Gemm);
    assert!(op.set_rows(gpu, max_tokens + 1).is_err());
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let data = random_f32(&mut rng(40), 12, 1.0);
    let shape_error = |r: Result<DenseWeight, Error>| matches!(r, Err(Error::Shape { .. }));
    assert!(shape_error(DenseWeight::upload_f32(gpu, "w", &data, 5, 3)));
    assert!(shape_error(DenseWeight::upload_f32(gpu, "w", &data, 0, 12)));
    assert!(shape_error(DenseWeight::upload_f32_with_chunk_rows(gpu, "w", &data, 4, 3, Some(0))));
    let halves: Vec<f16> = data.iter().map(|v| f16::from_f32(*v)).collect();
    assert!(shape_error(DenseWeight::upload_f16(gpu, "w", &halves, 3, 3)));

    let weight = DenseWeight::upload_f32(gpu, "w", &data, 4, 3).unwrap();
    let x = gpu.storage_from("x", &random_f32(&mut rng(41), 6, 1.0)).unwrap(); // 2 tokens of 3
    let y = poisoned(gpu, "y", 8); // 2 tokens of 4
    assert!(Matmul::new(gpu, &weight, &x, &y, 2).is_ok());
    for result in [
        Matmul::new(gpu, &weight, &x, &y, 3),
        Matmul::new(gpu, &weight, &x, &y, 0),
        Matmul::new(gpu, &weight, &y, &x, 2),
    ] {
        assert!(matches!(result, Err(Error::Shape { .. })), "expected a shape error");
    }
}

#[test]
fn an_unsplit_weight_over_the_binding_limit_is_a_clear_error() {
    let gpu = gpu();
    let limit = gpu.max_binding_bytes();
    if limit > 256 << 20 {
        eprintln!("skipped: binding limit {limit} is too large to exceed cheaply here (run with DELTALLM_PORTABLE=1)");
        return;
    }
    let cols = 4096u32;
    let rows = (limit / (cols as u64 * 4)) as u32 + 1;
    let data = vec![0.25f32; rows as usize * cols as usize];
    let err = DenseWeight::upload_f32_with_chunk_rows(gpu, "lm_head", &data, rows, cols, Some(rows)).unwrap_err();
    assert!(matches!(err, Error::BufferTooLarge { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("lm_head") && message.contains("at most"), "{message}");
    if gpu.portable {
        assert!(message.contains("portable"), "{message}");
    }
    let split = DenseWeight::upload_f32(gpu, "lm_head", &data, rows, cols).unwrap();
    let chunk_rows: Vec<u32> = split.chunks.iter().map(|c| c.rows).collect();
    assert_eq!(chunk_rows, vec![rows - 1, 1]);
}
