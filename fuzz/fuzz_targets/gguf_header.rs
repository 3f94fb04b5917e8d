//! Any byte string must parse to a GGUF or an error: no panic, no huge
//! allocation. Parsed files are also dequantized tensor by tensor.
#![no_main]

use deltallm::loader::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(gguf) = Gguf::from_bytes(data.to_vec()) {
        for (key, _) in gguf.metadata() {
            let _ = (
                gguf.get_u64(key),
                gguf.get_str(key),
                gguf.get_str_array(key),
            );
        }
        for tensor in gguf.tensors() {
            let _ = gguf.tensor_f32(&tensor.name);
            let _ = gguf.tensor_ternary(&tensor.name);
        }
    }
});
