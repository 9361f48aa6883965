//! Runners for end-to-end tests that boot real NexusOS images.
