"""Tests of ssvae_fast/ops: each fused op against its plain-torch formula."""
