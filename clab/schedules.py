"""Loss-weight schedules (placeholder, filled in by the schedules module work)."""
