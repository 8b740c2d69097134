"""Test-only support code: vector formats, model builders, harness helpers."""
