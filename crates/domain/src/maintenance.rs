//! Maintenances: scheduled, in progress, verifying, completed, or cancelled.
