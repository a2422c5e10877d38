print("vdiskfs")
