"""Tests of ssvae_fast/ops: each fused op on every backend against its plain-torch face."""
