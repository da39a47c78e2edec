module kaio

go 1.19
