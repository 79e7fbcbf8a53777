"""Optional integrations with other systems; each module imports its system only when used."""
