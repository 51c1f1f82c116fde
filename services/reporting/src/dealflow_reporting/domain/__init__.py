"""Reporting rules: periods, currency conversion, figures (pure)."""
