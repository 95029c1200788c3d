"""InstructEdit: instruction-based knowledge editing on Ray."""
