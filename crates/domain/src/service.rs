//! Services: created, renamed or regrouped, retired.
