"""Process supervision: start rank processes (or run as one, in place), hold them to deadlines, leave nothing."""
