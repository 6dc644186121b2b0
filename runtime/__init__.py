"""Process plumbing shared by every role: settings, database, migrations, telemetry, logs."""
