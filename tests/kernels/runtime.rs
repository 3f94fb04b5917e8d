use crate::common::*;
use deltallm::Error;

#[test]
fn buffer_over_the_binding_limit_is_a_clear_error() {
    let gpu = gpu();
    let too_big = gpu.limits.max_storage_buffer_binding_size as u64 + 4;
    let err = gpu.storage("huge weight", too_big).expect_err("over-limit buffer must fail");
    match &err {
        Error::BufferTooLarge { label, size, limit, .. } => {
            assert_eq!(label, "huge weight");
            assert_eq!(*size, too_big);
            assert_eq!(*limit, gpu.limits.max_storage_buffer_binding_size as u64);
        }
        other => panic!("expected BufferTooLarge, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("huge weight") && message.contains("at most"), "{message}");
    if gpu.portable {
        assert_eq!(gpu.limits.max_storage_buffer_binding_size, 128 << 20);
        assert!(message.contains("portable"), "{message}");
    }
}

#[test]
fn portable_mode_uses_the_webgpu_baseline() {
    let gpu = gpu();
    if gpu.portable {
        assert_eq!(gpu.limits, wgpu::Limits::default());
        assert_eq!(gpu.caps, deltallm::gpu::Capabilities::default());
        assert!(gpu.device.features().is_empty());
    } else {
        assert!(gpu.limits.max_storage_buffer_binding_size >= wgpu::Limits::default().max_storage_buffer_binding_size);
    }
}

#[test]
fn pipelines_are_cached() {
    let gpu = gpu();
    let key = deltallm::gpu::KernelKey::new("rmsnorm", "main");
    let a = gpu.pipeline(&key).unwrap();
    let before = gpu.pipelines_created();
    let b = gpu.pipeline(&key).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert_eq!(gpu.pipelines_created(), before);
}

#[test]
fn unknown_shader_and_missing_feature_are_errors() {
    let gpu = gpu();
    assert!(gpu.pipeline(&deltallm::gpu::KernelKey::new("no_such_shader", "main")).is_err());
    if !gpu.caps.shader_f16 {
        let err = gpu
            .pipeline(&deltallm::gpu::KernelKey::new("rmsnorm", "main").define("F16"))
            .expect_err("F16 without shader-f16");
        assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
    }
}
