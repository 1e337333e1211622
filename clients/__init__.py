"""Honest and malicious Flower clients and the attacks they compose."""
