use crate::common::*;
use deltallm::ops::embedding::Embedding;
use deltallm::ops::matmul::{DenseWeight, WeightFormat};
use deltallm::{Error, Gpu, cpu};
use half::{bf16, f16};
use rand::Rng;

/// A random `[vocab][dim]` table in `format` and the f32 values the GPU sees.
fn random_table(
    gpu: &Gpu,
    seed: u64,
    format: WeightFormat,
    vocab: u32,
    dim: u32,
    chunk_rows: Option<u32>,
) -> (DenseWeight, Vec<f32>) {
    let values = random_f32(&mut rng(seed), (vocab * dim) as usize, 1.0);
    match format {
        WeightFormat::F32 => {
            (DenseWeight::upload_f32_with_chunk_rows(gpu, "table", &values, vocab, dim, chunk_rows).unwrap(), values)
        }
        WeightFormat::F16 => {
            let halves: Vec<f16> = values.iter().map(|v| f16::from_f32(*v)).collect();
            let table = DenseWeight::upload_f16_with_chunk_rows(gpu, "table", &halves, vocab, dim, chunk_rows).unwrap();
            (table, cpu::matmul::f16_to_f32(&halves))
        }
        WeightFormat::Bf16 => {
            let halves: Vec<bf16> = values.iter().map(|v| bf16::from_f32(*v)).collect();
            let table =
                DenseWeight::upload_bf16_with_chunk_rows(gpu, "table", &halves, vocab, dim, chunk_rows).unwrap();
            (table, cpu::matmul::bf16_to_f32(&halves))
        }
    }
}

#[test]
fn embedding_gathers_rows_of_every_table_format_whole_and_split() {
    let gpu = gpu();
    let vocab = 50u32;
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Bf16] {
        // Odd dim leaves a pad half in packed rows; 16-row chunks end with a 2-row one.
        for (dim, chunk_rows) in [(37u32, None), (64, None), (37, Some(16)), (300, Some(16))] {
            let (table, values) = random_table(gpu, dim as u64, format, vocab, dim, chunk_rows);
            let mut r = rng(7);
            let mut ids: Vec<u32> = (0..9).map(|_| r.random_range(0..vocab)).collect();
            ids.extend([0, vocab - 1, ids[0]]);
            let ids_buffer = gpu.storage_from("ids", &ids).unwrap();
            let out = poisoned(gpu, "out", ids.len() * dim as usize);
            let op = Embedding::new(gpu, &table, &ids_buffer, &out, ids.len() as u32).unwrap();
            assert_eq!(op.dispatches().len(), table.chunks.len());
            op.run(gpu).unwrap();
            let got: Vec<f32> = gpu.read(&out).unwrap();
            // A gather copies exactly: no tolerance.
            assert_eq!(
                got,
                cpu::embedding::embedding(&values, dim as usize, &ids),
                "{format:?} dim {dim} chunks {chunk_rows:?}"
            );
        }
    }
}

#[test]
fn an_id_outside_the_vocabulary_gives_a_nan_row_and_reads_nothing() {
    let gpu = gpu();
    let (vocab, dim) = (20u32, 9u32);
    for format in [WeightFormat::F32, WeightFormat::Bf16] {
        let (table, values) = random_table(gpu, 3, format, vocab, dim, Some(8));
        let ids = [3u32, vocab, 19, u32::MAX];
        let ids_buffer = gpu.storage_from("ids", &ids).unwrap();
        // Finite fill, so a NaN row shows it was written, not left over.
        let out = gpu.storage_from("out", &vec![7.0f32; ids.len() * dim as usize]).unwrap();
        let op = Embedding::new(gpu, &table, &ids_buffer, &out, ids.len() as u32).unwrap();
        op.run(gpu).unwrap();
        let got: Vec<f32> = gpu.read(&out).unwrap();
        let want = cpu::embedding::embedding(&values, dim as usize, &ids);
        for (t, (g, w)) in got.chunks(dim as usize).zip(want.chunks(dim as usize)).enumerate() {
            if ids[t] < vocab {
                assert_eq!(g, w, "{format:?} token {t}");
            } else {
                assert!(g.iter().all(|v| v.is_nan()), "{format:?} token {t} (id {}): {g:?}", ids[t]);
            }
        }
        assert!(op.check_ids(&ids).is_err());
        assert!(op.check_ids(&[0, vocab - 1]).is_ok());
    }
}

#[test]
fn embedding_set_rows_gathers_only_those_tokens() {
    let gpu = gpu();
    let (vocab, dim, max_tokens) = (30u32, 17u32, 5u32);
    let (table, values) = random_table(gpu, 4, WeightFormat::F16, vocab, dim, Some(7));
    let ids = [29u32, 0, 14, 7, 8];
    let ids_buffer = gpu.storage_from("ids", &ids).unwrap();
    let out = poisoned(gpu, "out", (max_tokens * dim) as usize);
    let mut op = Embedding::new(gpu, &table, &ids_buffer, &out, max_tokens).unwrap();
    op.set_rows(gpu, 2).unwrap();
    op.run(gpu).unwrap();
    let got: Vec<f32> = gpu.read(&out).unwrap();
    let split = 2 * dim as usize;
    assert_eq!(&got[..split], &cpu::embedding::embedding(&values, dim as usize, &ids[..2])[..]);
    assert!(got[split..].iter().all(|v| v.is_nan()), "tokens past set_rows were written");
    assert!(op.set_rows(gpu, max_tokens + 1).is_err());
}

#[test]
fn embedding_bad_shapes_are_errors() {
    let gpu = gpu();
    let (table, _) = random_table(gpu, 5, WeightFormat::F32, 10, 8, None);
    let ids = gpu.storage_from("ids", &[1u32, 2, 3]).unwrap();
    let out = poisoned(gpu, "out", 3 * 8);
    assert!(Embedding::new(gpu, &table, &ids, &out, 3).is_ok());
    for result in [
        Embedding::new(gpu, &table, &ids, &out, 4),
        Embedding::new(gpu, &table, &ids, &out, 0),
        Embedding::new(gpu, &table, &ids, &ids, 3),
    ] {
        assert!(matches!(result, Err(Error::Shape { .. })), "expected a shape error");
    }
}
