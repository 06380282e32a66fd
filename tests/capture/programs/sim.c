/*
 * A tiny "legacy" simulation whose only window is the trace lines it prints.
 *
 * It prints every shape parity's trace-line importer reads, interleaved with progress output:
 *   key=v                    scalars (%.15g, %g, %e)
 *   key: [a, b, c]           Python-style lists
 *   key=[a b c; d e f; ...]  matrices
 *   key=k1:v1 k2:v2          named fields
 *   key v1 v2 v3             space-separated vectors
 *   TRACE_C_ITER it=N a=..   indexed lines, one per loop iteration
 *   repeated keys            a block printed once per iteration
 *   text, inf, nan, -0       special values
 *
 * Compile with one of -DBUG_UNIT (bond length in metres instead of angstroms), -DBUG_TRANSPOSE
 * (rotation matrix built transposed) or -DBUG_CONST (a truncated Boltzmann constant) to get a
 * "port" with exactly one bug.
 */
#include <math.h>
#include <stdio.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static double KB = 1.380649e-23; /* J/K */

int main(void) {
    printf("sim 1.0 -- starting\n");
    printf("TRACE_C: method=verlet\n");

    double bond = 1.54; /* angstrom */
#ifdef BUG_UNIT
    bond = 1.54e-10; /* the port stores metres: a unit slip */
#endif
    printf("TRACE_C: bond_length=%.15g\n", bond);

    double kb = KB;
#ifdef BUG_CONST
    kb = 1.38e-23; /* truncated constant */
#endif
    double temperature = 300.0;
    double kT = kb * temperature;
    /* kT in eV at 100, 200 and 300 K */
    printf("TRACE_C: thermal_energy=%.15e %.15e %.15e\n", kb * 100.0 / 1.602176634e-19,
           kb * 200.0 / 1.602176634e-19, kT / 1.602176634e-19);

    double angles[3] = {30.0, 45.0, 60.0}; /* degrees */
    printf("TRACE_C: angles: [%.15g, %.15g, %.15g]\n", angles[0], angles[1], angles[2]);

    double t = angles[0] * M_PI / 180.0, c = cos(t), s = sin(t);
    double rot[3][3] = {{c, -s, 0.0}, {s, c, 0.0}, {0.0, 0.0, 1.0}};
#ifdef BUG_TRANSPOSE
    double tmp;
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++) { tmp = rot[i][j]; rot[i][j] = rot[j][i]; rot[j][i] = tmp; }
#endif
    printf("TRACE_C: rot=[");
    for (int i = 0; i < 3; i++)
        printf("%.17g %.17g %.17g%s", rot[i][0], rot[i][1], rot[i][2], i < 2 ? "; " : "");
    printf("]\n");
    for (int i = 0; i < 3; i++)
        printf("TRACE_C: rot_row%d=%.17g %.17g %.17g\n", i, rot[i][0], rot[i][1], rot[i][2]);

    printf("TRACE_C: cell=a:%.15g b:%.15g c:%.15g\n", 3.5 * bond, 4.0 * bond, 9.0 * bond);

    double pos[3] = {bond, 0.5 * bond, 0.0}, rpos[3];
    for (int i = 0; i < 3; i++) rpos[i] = rot[i][0] * pos[0] + rot[i][1] * pos[1] + rot[i][2] * pos[2];
    printf("TRACE_C: pos %.17g %.17g %.17g\n", rpos[0], rpos[1], rpos[2]);

    double e = 0.0, v = 0.1;
    for (int it = 0; it < 4; it++) {
        printf("progress: step %d of 4\n", it + 1);
        double x = rpos[0] + v * it;
        e = 0.5 * (x - bond) * (x - bond) + kT / 1.602176634e-19;
        printf("TRACE_C_ITER it=%d energy=%.17g kinetic=%.17g\n", it, e, 0.5 * v * v * it);
        printf("TRACE_C: step_pos=%.17g %.17g\n", x, x * x);
    }
    fprintf(stderr, "warning: this is not a trace line\n");
    printf("TRACE_C: special=inf -inf nan -0\n");
    printf("TRACE_C: final_energy=%.17g\n", e);
    printf("TRACE_C: status=converged\n");
    printf("done.\n");
    return 0;
}
