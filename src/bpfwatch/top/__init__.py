"""`bpfwatch top`: a live view of what each process does, from the kernel."""
