/* comm_mpi.h: the MPI engine of the runtime's communication interface
 * (nnc_rt_comm, nnc_rt.h). Built into the library nnc_comm_mpi only where
 * CMake finds MPI; trainers and `nnc run` use it when a launcher started
 * them (nnc_rt_comm_launched_size() > 1). */
#ifndef NNC_COMM_MPI_H
#define NNC_COMM_MPI_H

#include "nnc_rt.h"

/* MPI_Init, then c describes MPI_COMM_WORLD. Errors keep MPI's default
 * handler (MPI_ERRORS_ARE_FATAL): a rank that dies ends the job through
 * the launcher instead of leaving the others waiting. c->close finalizes. */
int nnc_rt_comm_mpi_open(nnc_rt_comm *c, int *argc, char ***argv, nnc_rt_error *err);

#endif
